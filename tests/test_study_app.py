"""The user-study tool: folders -> study, the anonymous voting page, votes in SQLite, CLI.

Synthetic study: 12 tiny PNG originals, 5 methods. Every method's results have
their own width, so a test (or a browser) can tell which method is behind an
anonymous label only by looking at the image, as an evaluator would.
"""

import hashlib
import io
import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from moss_tf.commands.study import main
from moss_tf.study import (
    StudyError,
    VoteStore,
    build_study,
    create_app,
    make_study_server,
    parse_method_arg,
)

METHODS = ["moss", "syn2real", "jorder", "spanet", "rescan"]
ORIGINAL_WIDTH = 12
WIDTHS = {method: 16 + 4 * k for k, method in enumerate(METHODS)}  # 16, 20, ... 32 pixels
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def make_folders(root, num_images=12, methods=METHODS):
    """Originals (JPEG) and result folders (PNG) named after the methods, like a user's."""
    originals = root / "rainy"
    originals.mkdir()
    folders = {method: root / f"results_{method}" for method in methods}
    for folder in folders.values():
        folder.mkdir()
    for j in range(num_images):
        Image.new("RGB", (ORIGINAL_WIDTH, 10), (10 * j, 0, 0)).save(originals / f"rain_{j:02d}.jpg")
        for k, (method, folder) in enumerate(folders.items()):
            size = (WIDTHS.get(method, 16), 10)
            Image.new("RGB", size, (10 * j, 40 * k, 200)).save(folder / f"rain_{j:02d}.png")
    return originals, folders


@pytest.fixture
def study(tmp_path):
    return build_study(*make_folders(tmp_path))


def start_visit(client, address="10.0.0.1"):
    """POST the start button from a client ``address``; returns the visit token."""
    response = client.post("/start", environ_base={"REMOTE_ADDR": address})
    assert response.status_code == 303, response.get_data(as_text=True)
    token = re.fullmatch(r"/v/([\w-]+)/0", response.headers["Location"]).group(1)
    return token


def image_sources(html):
    return re.findall(r'<img src="([^"]+)"', html)


def pixels(data_or_path):
    """Decoded RGB pixels of image bytes or an image file."""
    source = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
    with Image.open(source) as image:
        return np.asarray(image.convert("RGB"))


def cast(client, token, position, label):
    """What a browser does: load the group's page, then post the choice."""
    assert client.get(f"/v/{token}/{position}").status_code == 200
    return client.post(f"/v/{token}/{position}", data={"choice": label})


# --- building a study from folders ----------------------------------------------------------


def test_build_study_matches_files_by_stem_across_formats(tmp_path):
    originals, folders = make_folders(tmp_path)
    study = build_study(originals, folders)
    assert study.methods == tuple(METHODS)
    assert study.images == tuple(f"rain_{j:02d}" for j in range(12))
    assert study.original("rain_03").name == "rain_03.jpg"
    assert study.result("spanet", "rain_03") == (folders["spanet"] / "rain_03.png").resolve()


def test_validation_names_each_method_and_missing_file(tmp_path):
    originals, folders = make_folders(tmp_path)
    (folders["jorder"] / "rain_04.png").unlink()
    (folders["jorder"] / "rain_07.png").unlink()
    (folders["rescan"] / "rain_11.png").unlink()
    with pytest.raises(StudyError) as error:
        build_study(originals, folders)
    message = str(error.value)
    assert "method 'jorder'" in message
    assert "rain_04.jpg, rain_07.jpg" in message
    assert "method 'rescan'" in message
    assert "rain_11.jpg" in message
    assert "'moss'" not in message


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ("empty_originals", "originals: folder .* holds no image"),
        ("missing_method_folder", "method 'spanet': folder .* does not exist"),
        ("duplicate_name", "repeated: moss"),
        ("one_method", "at least 2 methods"),
        ("duplicate_stem", "rain_00.png and rain_00.webp .* share the stem"),
    ],
)
def test_validation_errors_say_what_is_wrong(tmp_path, change, match):
    originals, folders = make_folders(tmp_path, num_images=2)
    pairs = list(folders.items())
    if change == "empty_originals":
        for path in originals.iterdir():
            path.unlink()
        (originals / "notes.txt").write_text("not an image")
    elif change == "missing_method_folder":
        pairs[3] = ("spanet", tmp_path / "nowhere")
    elif change == "duplicate_name":
        pairs.append(("moss", folders["jorder"]))
    elif change == "one_method":
        pairs = pairs[:1]
    elif change == "duplicate_stem":
        Image.new("RGB", (4, 4)).save(folders["moss"] / "rain_00.webp")
    with pytest.raises(StudyError, match=match):
        build_study(originals, pairs)


def test_method_argument_is_name_equals_folder():
    assert parse_method_arg("moss=out/moss") == ("moss", Path("out/moss"))
    with pytest.raises(StudyError, match="NAME=DIR"):
        parse_method_arg("out/moss")


# --- the page ---------------------------------------------------------------------------------


def test_page_hides_method_identity_and_keeps_the_original_as_reference(tmp_path, study):
    client = create_app(tmp_path / "votes.sqlite", study, seed=0).test_client()
    assert "Start" in client.get("/").get_data(as_text=True)
    token = start_visit(client)
    groups = VoteStore(tmp_path / "votes.sqlite").groups(token)
    assert len(groups) == 10
    assert len({group.image for group in groups}) == 10  # distinct images

    folders = {str(study.result(method, "rain_00").parent) for method in METHODS}
    for group in groups:
        html = client.get(f"/v/{token}/{group.position}").get_data(as_text=True)
        for secret in [*METHODS, *folders, str(study.original(group.image).parent)]:
            assert secret not in html
        sources = image_sources(html)
        # The reference comes first, then one result per label A-E, in that order.
        assert sources[0] == f"/v/{token}/{group.position}/reference"
        assert sources[1:] == [f"/v/{token}/{group.position}/result/{c}" for c in "ABCDE"]
        assert "Rainy original (reference)" in html
        assert html.count('type="radio"') == 5  # the original is not a choice

        reference = client.get(sources[0])
        np.testing.assert_array_equal(pixels(reference.data), pixels(study.original(group.image)))
        assert "Content-Disposition" not in reference.headers
        served = [pixels(client.get(source).data) for source in sources[1:]]
        # Each label shows the result of the method the store says, each method once.
        for image, method in zip(served, group.shown_order, strict=True):
            np.testing.assert_array_equal(image, pixels(study.result(method, group.image)))
        assert sorted(group.shown_order) == sorted(METHODS)


def test_method_order_is_shuffled_per_group_and_per_seed(tmp_path, study):
    def orders(db, seed):
        client = create_app(db, study, seed=seed).test_client()
        tokens = [start_visit(client, f"10.0.0.{k}") for k in range(3)]
        store = VoteStore(db)
        return [group.shown_order for token in tokens for group in store.groups(token)]

    seed_0 = orders(tmp_path / "a.sqlite", seed=0)
    # Behind label A stand several methods across the 30 groups, not one fixed method.
    assert len({order[0] for order in seed_0}) >= 3
    assert orders(tmp_path / "b.sqlite", seed=0) == seed_0  # a seed repeats the draws
    assert orders(tmp_path / "c.sqlite", seed=1) != seed_0
    # Without a seed every visit is drawn afresh.
    assert orders(tmp_path / "d.sqlite", seed=None) != orders(tmp_path / "e.sqlite", seed=None)


def test_fewer_groups_when_the_study_has_fewer_images(tmp_path):
    study = build_study(*make_folders(tmp_path, num_images=3))
    client = create_app(tmp_path / "votes.sqlite", study).test_client()
    token = start_visit(client)
    assert len(VoteStore(tmp_path / "votes.sqlite").groups(token)) == 3
    assert "Photo 1 of 3" in client.get(f"/v/{token}/0").get_data(as_text=True)


def test_a_vote_without_a_valid_choice_is_refused(tmp_path, study):
    db = tmp_path / "votes.sqlite"
    client = create_app(db, study).test_client()
    token = start_visit(client)
    client.get(f"/v/{token}/0")
    for form in [{}, {"choice": "F"}, {"choice": ""}, {"choice": "AB"}]:
        response = client.post(f"/v/{token}/0", data=form)
        assert response.status_code == 400
        assert "Please pick one result." in response.get_data(as_text=True)
    assert VoteStore(db).votes() == []
    assert client.get("/v/not-a-visit/0").status_code == 404
    assert client.get(f"/v/{token}/0/result/Z").status_code == 404


def test_votes_and_visits_survive_a_restart(tmp_path, study):
    db = tmp_path / "votes.sqlite"
    client = create_app(db, study, seed=3).test_client()
    token = start_visit(client)
    groups = VoteStore(db).groups(token)
    picked = []
    for group in groups[:4]:
        response = cast(client, token, group.position, "B")
        assert response.headers["Location"] == f"/v/{token}/{group.position + 1}"
        picked.append((group.image, group.shown_order[1]))

    # A new server process on the same file: the stored study, the visit and its votes remain.
    client = create_app(db).test_client()
    html = client.get(f"/v/{token}/3").get_data(as_text=True)
    assert 'value="B" required checked>' in html  # the earlier choice is shown
    for group in groups[4:]:
        response = cast(client, token, group.position, "D")
        picked.append((group.image, group.shown_order[3]))
    assert response.headers["Location"] == f"/v/{token}/done"
    assert "Your 10 choices are saved" in client.get(f"/v/{token}/done").get_data(as_text=True)

    # A second visit (from another address) is a new evaluator, with its own token.
    second = start_visit(client, "10.0.0.2")
    assert second != token
    cast(client, second, 0, "A")
    first_of_second = VoteStore(db).groups(second)[0]

    # Every vote is stored; the results count the complete visit only and say so.
    stored = [*picked, (first_of_second.image, first_of_second.shown_order[0])]
    assert sorted(VoteStore(db).votes()) == sorted(stored)
    results = VoteStore(db).results()
    assert results.total_votes == 10
    assert results.evaluators == 1
    assert results.incomplete_visits == 1


def test_the_database_stores_no_personal_data(tmp_path, study):
    db = tmp_path / "votes.sqlite"
    client = create_app(db, study).test_client()
    environ = {"REMOTE_ADDR": "10.9.8.7"}
    headers = {"User-Agent": "SecretBrowser/1.0"}
    token = start_visit(client, "10.9.8.7")
    client.get(f"/v/{token}/0", headers=headers, environ_base=environ)
    client.post(f"/v/{token}/0", data={"choice": "A"}, headers=headers, environ_base=environ)
    assert len(VoteStore(db).votes()) == 1
    raw = db.read_bytes()
    assert b"SecretBrowser" not in raw
    assert b"10.9.8.7" not in raw
    # The client is kept as a keyed hash, not a plain hash anyone could recompute.
    assert hashlib.sha256(b"10.9.8.7").hexdigest()[:32].encode() not in raw
    assert VoteStore(db).client_id("10.9.8.7").encode() in raw


def test_a_database_of_another_study_is_refused(tmp_path, study):
    db = tmp_path / "votes.sqlite"
    create_app(db, study)
    other_root = tmp_path / "other"
    other_root.mkdir()
    other = build_study(*make_folders(other_root, methods=["moss", "jorder"]))
    with pytest.raises(StudyError, match="belongs to another study"):
        create_app(db, other)


def test_server_refuses_a_busy_port(tmp_path, study):
    app = create_app(tmp_path / "votes.sqlite", study)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(StudyError, match="in use"):
            make_study_server(app, busy.getsockname()[1])
    with pytest.raises(StudyError, match=r"1\.\.65535"):
        make_study_server(app, 70000)


# --- command line ------------------------------------------------------------------------------


def vote_all(client, db, choose, address="10.0.0.1"):
    """One full visit; ``choose(group)`` returns the method to vote for."""
    token = start_visit(client, address)
    for group in VoteStore(db).groups(token):
        cast(client, token, group.position, "ABCDE"[group.shown_order.index(choose(group))])


def test_results_command_prints_the_table_and_writes_csv_json_plots(tmp_path, study, capsys):
    db = tmp_path / "votes.sqlite"
    client = create_app(db, study, seed=5).test_client()
    vote_all(client, db, lambda group: "moss")
    vote_all(client, db, lambda group: "moss" if group.position < 5 else "jorder", "10.0.0.2")

    out = tmp_path / "out"
    args = ["results", "--db", str(db), "--csv", str(tmp_path / "r.csv")]
    args += ["--json", str(tmp_path / "r.json"), "--plots", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "evaluators: 2   votes: 20" in printed
    assert "left out: 0 visits over the cap of 1 per client, 0 incomplete visits" in printed
    moss = next(line for line in printed.splitlines() if line.startswith("moss"))
    assert moss.split()[:3] == ["moss", "15", "75.00"]
    data = json.loads((tmp_path / "r.json").read_text())
    assert sum(sum(votes.values()) for votes in data["per_image_votes"].values()) == 20
    assert (tmp_path / "r.csv").read_text().startswith("method,votes,selection_pct,rank_1_pct")
    for name in ["selection.png", "rank_n.png", "per_image.png"]:
        with Image.open(out / name) as plot:
            assert plot.width > 300 and plot.height > 200


def test_command_line_errors_are_one_line_messages(tmp_path, capsys):
    originals, folders = make_folders(tmp_path, num_images=2)
    assert main(["results", "--db", str(tmp_path / "none.sqlite")]) == 2
    assert "none.sqlite does not exist" in capsys.readouterr().err
    serve = ["serve", "--originals", str(originals), "--db", str(tmp_path / "v.sqlite")]
    assert main([*serve, "--method", f"moss={folders['moss']}"]) == 2
    assert "at least 2 methods" in capsys.readouterr().err
    methods = ["--method", f"a={folders['moss']}", "--method", f"b={folders['jorder']}"]
    assert main([*serve, *methods, "--port", "0"]) == 2
    assert "--port must be in 1..65535" in capsys.readouterr().err
    assert main([*serve, *methods, "--groups-per-visit", "0"]) == 2
    assert "--groups-per-visit must be at least 1" in capsys.readouterr().err


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_serve_command_listens_on_loopback_and_prints_the_url(tmp_path):
    originals, folders = make_folders(tmp_path, num_images=2)
    port = free_port()
    command = [sys.executable, "-m", "moss_tf.study", "serve", "--originals", str(originals)]
    command += [f"--method={name}={folder}" for name, folder in folders.items()]
    command += ["--db", str(tmp_path / "v.sqlite"), "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first_line = server.stdout.readline()
        assert "2 images x 5 methods" in first_line
        assert f"http://127.0.0.1:{port}/" in server.stdout.readline()
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as page:
                    assert "Which result looks best?" in page.read().decode()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        server.terminate()
        server.wait(timeout=10)


# --- a real browser ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's Chromium is not at /usr/bin/chromium (`make test` installs it as root)",
)
def test_browser_votes_on_ten_groups_and_the_results_count_them(tmp_path, study, capsys):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    db = tmp_path / "votes.sqlite"
    server = make_study_server(create_app(db, study), port=0)
    url = f"http://127.0.0.1:{server.server_port}/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # The evaluator prefers moss on the first 7 photos and jorder on the last 3, recognising
    # them only by the width of the images the browser loaded.
    wanted = ["moss"] * 7 + ["jorder"] * 3
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            page = browser.new_page()
            page.goto(url)
            with page.expect_navigation():
                page.click("text=Start")
            for k, method in enumerate(wanted):
                assert page.inner_text(".progress") == f"Photo {k + 1} of 10"
                reference = page.eval_on_selector(".reference img", "img => img.naturalWidth")
                assert reference == ORIGINAL_WIDTH
                widths = page.eval_on_selector_all(
                    ".result img", "imgs => imgs.map(img => img.naturalWidth)"
                )
                assert sorted(widths) == sorted(WIDTHS.values())  # every result loaded
                label = "ABCDE"[widths.index(WIDTHS[method])]
                page.click(f"img[alt='Result {label}']")  # clicking the image picks it
                assert page.is_checked(f"input[value='{label}']")
                with page.expect_navigation():
                    page.click("button[type=submit]")
            assert "Your 10 choices are saved" in page.inner_text("body")
            browser.close()
    finally:
        server.shutdown()
        server.server_close()

    assert main(["results", "--db", str(db)]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[2:]}
    # votes, selected %, rank-1 %: 10 images, each with a single vote.
    assert rows["moss"][1:4] == ["7", "70.00", "70.00"]
    assert rows["jorder"][1:4] == ["3", "30.00", "30.00"]
    assert rows["spanet"][1:4] == ["0", "0.00", "0.00"]
