"""The user study under hostile input: blind images, one count per participant, size caps.

A participant must not tell the methods apart by anything but the pixels, a
script must not outvote real participants, and a large or concurrent load
must neither take the server down nor lose votes.
"""

import contextlib
import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms
from PIL.PngImagePlugin import PngInfo
from test_study_app import METHODS, WIDTHS, cast, make_folders, pixels, start_visit

from moss_tf.commands.study import main
from moss_tf.study import VoteStore, build_study, create_app, make_study_server
from moss_tf.study.app import MAX_REQUEST_BYTES


def png_chunks(data):
    """Chunk types of a PNG, in order."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    chunks, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        chunks.append(data[at + 4 : at + 8].decode())
        at += 12 + length
    return chunks


@pytest.fixture
def study(tmp_path):
    return build_study(*make_folders(tmp_path))


@pytest.fixture
def memory_db(tmp_path):
    """A vote database in RAM (/dev/shm) when there is one, for the tests casting hundreds
    of votes: each vote is a commit, which costs ~10 ms on this machine's disk."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path / "votes.sqlite"
        return
    folder = Path(tempfile.mkdtemp(prefix="study-test-", dir=shm))
    yield folder / "votes.sqlite"
    shutil.rmtree(folder)


# --- every method looks the same on the wire ----------------------------------------------------


def save_in_its_own_way(folder, method, rgb):
    """Each method keeps its own format and metadata, as the issue found (EXIF, text, profile)."""
    image = Image.fromarray(rgb)
    exif = Image.Exif()
    exif[0x0131] = f"{method} 1.0"  # Software
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    if method == "moss":
        info = PngInfo()
        info.add_text("Software", "moss")
        image.save(folder / "x.png", pnginfo=info)
    elif method == "syn2real":
        image.save(folder / "x.jpg", quality=95, exif=exif, icc_profile=srgb)
    elif method == "jorder":
        image.save(folder / "x.webp", lossless=True, exif=exif)
    elif method == "spanet":
        image.save(folder / "x.bmp")
    else:  # rescan: opaque RGBA
        image.convert("RGBA").save(folder / "x.png", dpi=(300, 300))
    return next(folder.iterdir())


def test_every_image_is_served_as_the_same_bare_png_whatever_the_method_file(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    originals = tmp_path / "rainy"
    originals.mkdir()
    Image.fromarray(rgb).save(originals / "x.jpg", exif=Image.Exif())
    files = {}
    for method in METHODS:
        (tmp_path / method).mkdir()
        files[method] = save_in_its_own_way(tmp_path / method, method, rgb)
    assert len({path.suffix for path in files.values()}) == 4  # png, jpg, webp, bmp
    study = build_study(originals, {method: tmp_path / method for method in METHODS})

    client = create_app(tmp_path / "votes.sqlite", study).test_client()
    token = start_visit(client)
    shown_order = VoteStore(tmp_path / "votes.sqlite").groups(token)[0].shown_order
    responses = [client.get(f"/v/{token}/0/result/{label}") for label in "ABCDE"]
    responses.append(client.get(f"/v/{token}/0/reference"))

    headers = [dict(r.headers) for r in responses]
    for header in headers:
        del header["Content-Length"]
    assert headers == [{"Content-Type": "image/png", "Cache-Control": "private, max-age=3600"}] * 6
    for response in responses:
        assert response.status_code == 200
        assert len(response.data) == int(response.headers["Content-Length"])
        # Only pixel data: no text, EXIF, profile, gamma, physical size or time chunk.
        assert set(png_chunks(response.data)) == {"IHDR", "IDAT", "IEND"}
        assert Image.open(io.BytesIO(response.data)).mode == "RGB"
    for response, method in zip(responses, shown_order, strict=False):
        # Lossless files come out pixel for pixel; the JPEG as decoded.
        np.testing.assert_array_equal(pixels(response.data), pixels(files[method]))
    # Identical pixels give identical bytes: the encoding itself tells nothing.
    lossless = [r.data for r, m in zip(responses, shown_order, strict=False) if m != "syn2real"]
    assert len(set(lossless)) == 1


def test_an_upright_result_from_exif_orientation_and_white_under_transparency(tmp_path):
    rgb = np.zeros((10, 20, 3), np.uint8)
    rgb[:, :10] = (200, 0, 0)
    originals, folders = make_folders(tmp_path, num_images=1, methods=["a", "b"])
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display", as cameras write it
    rotated = Image.fromarray(rgb).transpose(Image.Transpose.ROTATE_90)
    rotated.save(folders["a"] / "rain_00.jpg", exif=exif, quality=100)
    (folders["a"] / "rain_00.png").unlink()
    clear = Image.fromarray(rgb).convert("RGBA")
    clear.putalpha(0)
    clear.save(folders["b"] / "rain_00.png")
    study = build_study(originals, folders)
    client = create_app(tmp_path / "votes.sqlite", study).test_client()
    token = start_visit(client)
    order = VoteStore(tmp_path / "votes.sqlite").groups(token)[0].shown_order
    served = {
        m: pixels(client.get(f"/v/{token}/0/result/{'AB'[k]}").data) for k, m in enumerate(order)
    }
    assert served["a"].shape == (10, 20, 3)  # shown as the camera meant, as browsers do
    assert (np.abs(served["a"].astype(int) - rgb).max()) < 40  # JPEG at quality 100
    assert (served["b"] == 255).all()  # fully transparent on a white page


def test_re_encoded_images_are_cached_within_a_byte_budget(tmp_path, study, monkeypatch):
    from moss_tf.study import images

    calls = []
    encode = images.encode_png
    monkeypatch.setattr(images, "encode_png", lambda path: calls.append(path) or encode(path))
    cache = images.EncodedImages(max_bytes=10_000)
    first = cache.get(study.result("moss", "rain_00"))
    assert cache.get(study.result("moss", "rain_00")) == first
    assert len(calls) == 1
    for image in study.images:
        cache.get(study.result("moss", image))
    assert 0 < cache.size_bytes <= 10_000


# --- one participant, one count ---------------------------------------------------------------


def flood(client, db, visits=30, by_pixels=True):
    """A script: start ``visits`` visits from one address and vote every group for moss.

    It finds moss by the width of the served image (each method's results have
    their own width in these folders), as a script reading the pixels would
    (``by_pixels``), or else quicker from the database.
    When a start is refused it votes again on the last visit it got. Returns
    the status codes of the starts and of the 10 x ``visits`` votes.
    """
    starts, votes, token = [], [], None
    for _ in range(visits):
        response = client.post("/start", environ_base={"REMOTE_ADDR": "203.0.113.9"})
        starts.append(response.status_code)
        match = re.fullmatch(r"/v/([\w-]+)/0", response.headers.get("Location", ""))
        token = match.group(1) if match else token
        for position in range(10):
            client.get(f"/v/{token}/{position}")
            if by_pixels:
                widths = [
                    Image.open(
                        io.BytesIO(client.get(f"/v/{token}/{position}/result/{c}").data)
                    ).width
                    for c in "ABCDE"
                ]
                label = "ABCDE"[widths.index(WIDTHS["moss"])]
            else:
                label = "ABCDE"[VoteStore(db).groups(token)[position].shown_order.index("moss")]
            votes.append(client.post(f"/v/{token}/{position}", data={"choice": label}).status_code)
    return starts, votes


def test_a_flooding_script_counts_as_at_most_one_participant(memory_db, study):
    db = memory_db
    client = create_app(db, study).test_client()  # the default cap: 1 visit per address
    started = time.monotonic()
    starts, votes = flood(client, db)
    assert starts == [303] + [429] * 29
    assert votes == [303] * 300  # every vote "accepted" ...
    assert len(VoteStore(db).votes()) == 10  # ... but each replaced the last on its photo
    # An honest participant elsewhere is not blocked by the flood.
    token = start_visit(client, "198.51.100.4")
    for position in range(10):
        cast(client, token, position, "C")

    results = VoteStore(db).results()
    assert results.evaluators == 2
    assert results.total_votes == 20
    moss = results.methods.index("moss")
    assert results.counts[:, moss].sum() <= 10 + 10  # at most one participant's worth each
    assert time.monotonic() - started < 20


def test_results_leave_out_visits_over_the_cap_and_incomplete_ones(
    tmp_path, memory_db, study, capsys
):
    db = memory_db
    # A server run with a generous cap lets the script's 30 visits in ...
    client = create_app(db, study, visits_per_client=30).test_client()
    starts, votes = flood(client, db, by_pixels=False)
    assert starts == [303] * 30 and votes == [303] * 300
    honest = start_visit(client, "198.51.100.4")
    for position in range(10):
        cast(client, honest, position, "A")
    halfway = start_visit(client, "198.51.100.5")
    cast(client, halfway, 0, "A")
    start_visit(client, "198.51.100.6")  # opened, never voted

    # ... the results under that cap count them, minus the incomplete visits ...
    generous = VoteStore(db).results()
    assert (generous.evaluators, generous.over_cap_visits, generous.incomplete_visits) == (31, 0, 2)
    # ... and recounted at one visit per client the 300 votes weigh as one participant.
    strict = VoteStore(db).results(visits_per_client=1)
    assert (strict.evaluators, strict.over_cap_visits, strict.incomplete_visits) == (2, 29, 2)
    assert strict.total_votes == 20
    assert strict.counts[:, strict.methods.index("moss")].sum() <= 20

    assert (
        main(
            [
                "results",
                "--db",
                str(db),
                "--visits-per-client",
                "1",
                "--json",
                str(tmp_path / "r.json"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "evaluators: 2   votes: 20" in printed
    assert "left out: 29 visits over the cap of 1 per client, 2 incomplete visits" in printed
    left_out = json.loads((tmp_path / "r.json").read_text())["left_out"]
    assert left_out == {"over_cap_visits": 29, "incomplete_visits": 2, "visits_per_client": 1}


def test_a_vote_counts_only_for_a_group_shown_to_that_visit_and_once(tmp_path, study):
    db = tmp_path / "votes.sqlite"
    client = create_app(db, study).test_client()
    token = start_visit(client)
    # Posting to a group whose page this visit never loaded is refused, and stores nothing.
    response = client.post(f"/v/{token}/3", data={"choice": "A"})
    assert response.status_code == 409
    assert "not shown" in response.get_data(as_text=True)
    assert client.post(f"/v/{token}/10", data={"choice": "A"}).status_code == 404
    assert client.post("/v/someone-else/0", data={"choice": "A"}).status_code == 404
    assert VoteStore(db).votes() == []

    # Once shown, the vote counts; a second vote on the same photo replaces the first.
    assert cast(client, token, 3, "A").status_code == 303
    assert cast(client, token, 3, "B").status_code == 303
    group = VoteStore(db).groups(token)[3]
    assert VoteStore(db).votes() == [(group.image, group.shown_order[1])]


# --- caps on clients and requests -------------------------------------------------------------


def test_visit_cap_per_client_address(tmp_path, study):
    app = create_app(tmp_path / "votes.sqlite", study, visits_per_client=2)
    client = app.test_client()

    def start(address, **headers):
        return client.post("/start", environ_base={"REMOTE_ADDR": address}, headers=headers)

    assert [start("10.1.1.1").status_code for _ in range(3)] == [303, 303, 429]
    assert "already taken part" in start("10.1.1.1").get_data(as_text=True)
    assert start("10.1.1.2").status_code == 303  # another address has its own count
    # One IPv6 client holds a whole /64: rotating within it does not reset the count.
    assert start("2001:db8:1:2::a").status_code == 303
    assert start("2001:db8:1:2::b").status_code == 303
    assert start("2001:db8:1:2:ffff::c").status_code == 429
    assert start("2001:db8:1:3::a").status_code == 303
    # Without --trust-proxy a forged X-Forwarded-For changes nothing.
    assert start("10.1.1.1", **{"X-Forwarded-For": "192.0.2.77"}).status_code == 429
    # The cap is kept with the votes: a restarted server still knows the clients.
    again = create_app(tmp_path / "votes.sqlite", visits_per_client=2).test_client()
    assert again.post("/start", environ_base={"REMOTE_ADDR": "10.1.1.1"}).status_code == 429


def test_behind_a_trusted_proxy_the_forwarded_address_is_the_client(tmp_path, study):
    client = create_app(tmp_path / "votes.sqlite", study, trust_proxy=True).test_client()

    def start(forwarded):
        # Every request arrives from the proxy on 127.0.0.1.
        headers = {"X-Forwarded-For": forwarded}
        return client.post("/start", headers=headers, environ_base={"REMOTE_ADDR": "127.0.0.1"})

    assert start("192.0.2.1").status_code == 303
    assert start("192.0.2.2").status_code == 303
    assert start("192.0.2.1").status_code == 429
    # A client's own forged entry comes first; the proxy appends the real address last.
    assert start("192.0.2.99, 192.0.2.1").status_code == 429


def test_request_bodies_over_the_cap_are_refused(tmp_path, study):
    db = tmp_path / "votes.sqlite"
    client = create_app(db, study).test_client()
    token = start_visit(client)
    client.get(f"/v/{token}/0")
    padding = "x" * MAX_REQUEST_BYTES
    response = client.post(f"/v/{token}/0", data={"choice": "A", "padding": padding})
    assert response.status_code == 413
    assert client.post("/start", data=b"x" * (MAX_REQUEST_BYTES + 1)).status_code == 413
    assert VoteStore(db).votes() == []
    assert client.post(f"/v/{token}/0", data={"choice": "A"}).status_code == 303


def raw_request(port, head, body=b""):
    """Send a raw HTTP request; returns the status line and the seconds taken."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(head.encode() + body)
        reply = connection.makefile("rb").readline().decode()
    return reply.strip(), time.monotonic() - started


@pytest.fixture
def server(memory_db, study):
    """A real threaded server on a free port, with the client address from the proxy header."""
    app = create_app(memory_db, study, visits_per_client=100, trust_proxy=True)
    server = make_study_server(app, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_server_answers_a_1_gb_request_at_once_without_reading_it(server):
    head = (
        "POST /start HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {1 << 30}\r\n\r\n"
    )
    status, seconds = raw_request(server.server_port, head, b"choice=A&" + b"x" * 65536)
    assert status.startswith("HTTP/1.1 413"), status
    assert seconds < 5
    # Chunked, without a length: cut at the cap while reading.
    head = (
        "POST /start HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"8000\r\n" + b"x" * 0x8000 + b"\r\n"
    status, seconds = raw_request(server.server_port, head, chunk * 4)
    assert status.startswith("HTTP/1.1 413"), status
    # A small chunked form is read whole: the vote of a client sending chunks counts.
    status, location = request_as(server.server_port, "POST", "/start", "192.0.2.200", body="")
    token = location.rsplit("/", 2)[-2]
    request_as(server.server_port, "GET", f"/v/{token}/0", "192.0.2.200")
    head = (
        f"POST /v/{token}/0 HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 192.0.2.200\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    status, _ = raw_request(server.server_port, head, b"8\r\nchoice=C\r\n0\r\n\r\n")
    assert status.startswith("HTTP/1.1 303"), status


# --- concurrency and crashes ------------------------------------------------------------------


def request_as(port, method, path, address, body=None):
    """One request as participant ``address`` (through the trusted proxy header)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"X-Forwarded-For": address}
    if body is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("Location", "")
    finally:
        connection.close()


def participant(port, address, acknowledged, visits=1):
    """Vote on every group of ``visits`` visits; record each vote the server acknowledged."""
    for _ in range(visits):
        status, location = request_as(port, "POST", "/start", address, body="")
        token = location.rsplit("/", 2)[-2]
        for position in range(10):
            request_as(port, "GET", f"/v/{token}/{position}", address)
            label = "ABCDE"[(position + len(address)) % 5]
            status, _ = request_as(
                port, "POST", f"/v/{token}/{position}", address, f"choice={label}"
            )
            if status == 303:
                acknowledged.append((token, position, label))


def check_acknowledged_votes_are_stored(db, acknowledged):
    store = VoteStore(db)
    for token, position, label in acknowledged:
        group = store.groups(token)[position]
        assert group.choice == group.shown_order["ABCDE".index(label)], (token, position)


def test_concurrent_participants_lose_no_vote(memory_db, server):
    acknowledged = []
    threads = [
        threading.Thread(
            target=participant, args=(server.server_port, f"192.0.2.{k}", acknowledged)
        )
        for k in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(acknowledged) == 8 * 10
    check_acknowledged_votes_are_stored(memory_db, acknowledged)
    results = VoteStore(memory_db).results()
    assert (results.evaluators, results.total_votes) == (8, 80)


def test_kill_9_during_concurrent_voting_keeps_every_acknowledged_vote(tmp_path):
    originals, folders = make_folders(tmp_path)
    db = tmp_path / "votes.sqlite"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "moss_tf.study", "serve", "--originals", str(originals)]
    command += [f"--method={name}={folder}" for name, folder in folders.items()]
    command += ["--db", str(db), "--port", str(port), "--visits-per-client", "1000"]
    command += ["--trust-proxy"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    acknowledged = []
    try:
        server.stdout.readline()
        server.stdout.readline()  # the URL: listening
        threads = [
            threading.Thread(
                target=lambda k=k: _until_error(port, f"192.0.2.{k}", acknowledged), daemon=True
            )
            for k in range(4)
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while len(acknowledged) < 30 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(server.pid, signal.SIGKILL)  # mid-vote, maybe mid-commit
        for thread in threads:
            thread.join(timeout=15)
    finally:
        server.kill()
        server.wait()
    assert len(acknowledged) >= 30
    check_acknowledged_votes_are_stored(db, acknowledged)
    # At most the vote each participant had in flight is stored without its answer.
    assert len(acknowledged) <= len(VoteStore(db).votes()) <= len(acknowledged) + 4
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    VoteStore(db).results()  # and it still scores


def _until_error(port, address, acknowledged):
    with contextlib.suppress(OSError, http.client.HTTPException, IndexError):  # the kill
        participant(port, address, acknowledged, visits=1000)


FIRST_RELEASE_SCHEMA = """
CREATE TABLE study (id INTEGER PRIMARY KEY CHECK (id = 1), definition TEXT NOT NULL);
CREATE TABLE visits (number INTEGER PRIMARY KEY, token TEXT NOT NULL UNIQUE);
CREATE TABLE groups (
    token TEXT NOT NULL REFERENCES visits (token), position INTEGER NOT NULL,
    image TEXT NOT NULL, shown_order TEXT NOT NULL, choice TEXT, PRIMARY KEY (token, position)
);
"""


def test_a_database_from_before_the_cap_opens_and_counts_each_old_visit_once(tmp_path, study):
    db = tmp_path / "old.sqlite"
    order = json.dumps(METHODS)
    with sqlite3.connect(db) as connection:  # as the first release wrote it
        connection.executescript(FIRST_RELEASE_SCHEMA)
        connection.execute("INSERT INTO study VALUES (1, ?)", (json.dumps(study.to_dict()),))
        for token, choice in [("t1", "moss"), ("t2", "moss"), ("t3", None)]:
            connection.execute("INSERT INTO visits (token) VALUES (?)", (token,))
            connection.execute(
                "INSERT INTO groups VALUES (?, 0, 'rain_00', ?, ?)", (token, order, choice)
            )

    results = VoteStore(db).results()  # old visits: one client each; old groups: shown
    assert (results.evaluators, results.total_votes, results.incomplete_visits) == (2, 2, 1)
    client = create_app(db, study, groups_per_visit=1).test_client()
    assert client.post("/v/t3/0", data={"choice": "A"}).status_code == 303
    assert VoteStore(db).results().evaluators == 3
    assert start_visit(client) != "t3"  # and new visits are capped as usual
