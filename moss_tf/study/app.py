"""The voting page of a user study (docs/method.md §5), a Flask app over a :class:`VoteStore`.

A visit is one evaluator: the start button draws ``groups_per_visit`` distinct
random images and, per image, a random order of the methods; the visit is
stored under a random token carried in the URL (no cookie, nothing personal).
Each group page shows the rainy original as the fixed reference and the
results under neutral labels A, B, C, ...; image URLs hold only the token,
the group position and the label, never a method name or folder. Every
image is served as a PNG re-encoded from its pixels (:mod:`.images`), so the
file type, bytes, metadata and headers of a result do not tell its method
(only the length differs). Plain HTML forms: no JavaScript needed.

Hostile input: each client address may start ``visits_per_client`` visits
(then 429); a vote counts only for a group of the visit whose page was served
to it (else 409); a second vote on a group replaces the first (one vote per
participant and photo); request bodies above :data:`MAX_REQUEST_BYTES` get
413. Behind a reverse proxy, ``trust_proxy`` takes the client address from
the proxy's ``X-Forwarded-For`` (werkzeug ``ProxyFix``, one proxy).

Pages::

    GET  /                              explanation and a start button
    POST /start                         new visit -> first group (429 over the cap)
    GET  /v/<token>/<position>          a group (position 0-based)
    POST /v/<token>/<position>          the vote (form field choice = label) -> next group
                                        (409 if that page was never served)
    GET  /v/<token>/<position>/reference          the rainy original
    GET  /v/<token>/<position>/result/<label>     a result
    GET  /v/<token>/done                thank-you page

Example::

    app = create_app("votes.sqlite", build_study("originals", {"a": "out/a", "b": "out/b"}))
    make_study_server(app, port=8765).serve_forever()  # host="0.0.0.0" for a network
"""

from __future__ import annotations

import random
import string
import threading
from collections.abc import Sequence
from pathlib import Path

from flask import Flask, Response, abort, redirect, render_template, request, url_for
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.serving import BaseWSGIServer, make_server

from moss_tf.study.images import PNG_MIMETYPE, EncodedImages, check_image
from moss_tf.study.store import Group, VoteStore
from moss_tf.study.study import Study, StudyError

__all__ = ["MAX_REQUEST_BYTES", "create_app", "draw_visit", "make_study_server"]

HOST = "127.0.0.1"
LABELS = string.ascii_uppercase
# A vote is a form of one short field; anything much larger is not a participant.
MAX_REQUEST_BYTES = 16 * 1024


def draw_visit(
    study: Study, groups_per_visit: int, rng: random.Random
) -> list[tuple[str, list[str]]]:
    """Draw the groups of one visit.

    Args:
        study: the study.
        groups_per_visit: wanted number of groups (>= 1); fewer when the study
            has fewer images.
        rng: the source of randomness.

    Returns:
        ``(image, shown_order)`` pairs: distinct images drawn uniformly, each
        with all methods in a random order (the method behind label A, B, ...).
    """
    images = rng.sample(study.images, min(groups_per_visit, len(study.images)))
    groups = []
    for image in images:
        order = list(study.methods)
        rng.shuffle(order)
        groups.append((image, order))
    return groups


def create_app(
    db_path: str | Path,
    study: Study | None = None,
    groups_per_visit: int = 10,
    seed: int | None = None,
    visits_per_client: int = 1,
    trust_proxy: bool = False,
    image_cache_bytes: int = 256 << 20,
) -> Flask:
    """Build the voting app.

    Args:
        db_path: the SQLite vote database (created when missing).
        study: the study to run; stored in the database (which must not hold
            another study). None (default) runs the study already stored there.
        groups_per_visit: groups shown to each evaluator (default 10, the paper's).
        seed: None (default) draws every visit from fresh randomness; an int
            makes visit k the same for every run with that seed (visit numbers
            continue across restarts).
        visits_per_client: visits one client address may start (default 1;
            raise it when participants share an address, e.g. behind one NAT).
            Stored in the database as the default cap of ``results``.
        trust_proxy: take the client address from ``X-Forwarded-For`` as set
            by one reverse proxy in front of the app (only then: anyone can
            send that header).
        image_cache_bytes: memory for the re-encoded images (default 256 MiB).

    Raises:
        StudyError: bad arguments, another study in the database, more than 26
            methods, or a file of the study has disappeared or is no image.
    """
    if groups_per_visit < 1:
        raise StudyError(f"--groups-per-visit must be at least 1, got {groups_per_visit}")
    if visits_per_client < 1:
        raise StudyError(f"--visits-per-client must be at least 1, got {visits_per_client}")
    store = VoteStore(db_path)
    if study is None:
        study = store.load_study()
    else:
        store.save_study(study)
    if len(study.methods) > len(LABELS):
        raise StudyError(f"at most {len(LABELS)} methods fit the page, got {len(study.methods)}")
    _check_files(study)
    store.visits_per_client = visits_per_client

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    if trust_proxy:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]
    images = EncodedImages(image_cache_bytes)
    new_visit_lock = threading.Lock()
    proxy_warned = threading.Event()

    def visit(token: str) -> list[Group]:
        groups = store.groups(token)
        if not groups:
            abort(404)
        return groups

    def group_at(token: str, position: int) -> Group:
        groups = visit(token)
        if not 0 <= position < len(groups):
            abort(404)
        return groups[position]

    @app.before_request
    def limit_body() -> None:
        # Refuse a large body before anything reads it. A body without a length
        # (chunked) is read only up to MAX_CONTENT_LENGTH: filling it means more.
        if (request.content_length or 0) > MAX_REQUEST_BYTES:
            abort(413)
        body = request.get_data(cache=True)  # the form is parsed from this copy
        if request.content_length is None and len(body) >= MAX_REQUEST_BYTES:
            abort(413)
        if not trust_proxy and "X-Forwarded-For" in request.headers and not proxy_warned.is_set():
            proxy_warned.set()
            app.logger.warning(
                "requests carry X-Forwarded-For but --trust-proxy is off: every participant "
                "behind the proxy counts as one client (the proxy) for --visits-per-client"
            )

    @app.get("/")
    def index() -> str:
        return render_template("index.html", groups=min(groups_per_visit, len(study.images)))

    @app.post("/start")
    def start() -> Response | tuple[str, int]:
        client = store.client_id(request.remote_addr or "")
        # The lock keeps visit numbers (and so seeded draws) distinct under threads.
        with new_visit_lock:
            if store.client_visits(client) >= visits_per_client:
                return render_template("limit.html"), 429
            number = store.visit_count() + 1
            rng = random.Random(None if seed is None else f"{seed}:{number}")
            draw = draw_visit(study, groups_per_visit, rng)
            token = store.add_visit(draw, client=client, cap=visits_per_client)
        if token is None:  # another server process on the same file took the last one
            return render_template("limit.html"), 429
        return redirect(url_for("group", token=token, position=0), code=303)

    @app.route("/v/<token>/<int:position>", methods=["GET", "POST"])
    def group(token: str, position: int) -> Response | str | tuple[str, int]:
        groups = visit(token)
        if position >= len(groups):
            if request.method == "POST":
                abort(404)
            return redirect(url_for("done", token=token))
        current = groups[position]
        if request.method == "POST":
            return cast_vote(token, current, len(groups))
        if not current.shown:
            store.mark_shown(token, position)
        return render_group(token, current, len(groups))

    def cast_vote(token: str, current: Group, total: int) -> Response | tuple[str, int]:
        labels = _labels(current)
        if not current.shown:
            return "This photo was not shown to this visit; open its page first.\n", 409
        label = request.form.get("choice", "")
        if label not in labels:
            return render_group(token, current, total, "Please pick one result."), 400
        store.vote(token, current.position, current.shown_order[labels.index(label)])
        if current.position + 1 == total:
            return redirect(url_for("done", token=token), code=303)
        return redirect(url_for("group", token=token, position=current.position + 1), code=303)

    def render_group(token: str, current: Group, total: int, error: str = "") -> str:
        labels = _labels(current)
        chosen = (
            labels[current.shown_order.index(current.choice)] if current.choice is not None else ""
        )
        return render_template(
            "group.html",
            token=token,
            position=current.position,
            total=total,
            labels=labels,
            chosen=chosen,
            error=error,
        )

    @app.get("/v/<token>/<int:position>/reference")
    def reference(token: str, position: int) -> Response:
        return _image_response(images.get(study.original(group_at(token, position).image)))

    @app.get("/v/<token>/<int:position>/result/<label>")
    def result(token: str, position: int, label: str) -> Response:
        current = group_at(token, position)
        labels = _labels(current)
        if label not in labels:
            abort(404)
        method = current.shown_order[labels.index(label)]
        return _image_response(images.get(study.result(method, current.image)))

    @app.get("/v/<token>/done")
    def done(token: str) -> str:
        votes = sum(group.choice is not None for group in visit(token))
        return render_template("done.html", votes=votes)

    return app


def make_study_server(app: Flask, port: int = 8765, host: str = HOST) -> BaseWSGIServer:
    """A threaded HTTP server for ``app``, bound to 127.0.0.1 unless ``host`` says otherwise.

    Args:
        app: from :func:`create_app`.
        port: 1..65535, or 0 for any free port (read it back from ``server_port``).
        host: the address to listen on: 127.0.0.1 (default; this machine, or
            a reverse proxy on it), ``0.0.0.0`` / ``::`` for every network
            interface, or one interface's address.

    Raises:
        StudyError: port out of range, or the address cannot be listened on.
    """
    if not 0 <= port <= 65535:
        raise StudyError(f"--port must be in 1..65535, got {port}")
    try:
        return make_server(host, port, app, threaded=True)
    except (OSError, SystemExit) as error:
        # werkzeug reports a busy port on stderr and exits; say it as a StudyError.
        raise StudyError(
            f"cannot listen on {host}:{port}; is the port in use, or {host!r} not an address "
            "of this machine?"
        ) from error


def _labels(group: Group) -> list[str]:
    """The neutral labels A, B, ... of a group's results, in the order shown."""
    return list(LABELS[: len(group.shown_order)])


def _image_response(png: bytes) -> Response:
    # The same type and headers for every image, whatever its method's file:
    # no file name, modification time or ETag, only the length differs.
    response = Response(png, mimetype=PNG_MIMETYPE)
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response


def _check_files(study: Study) -> None:
    files: Sequence[Path] = [
        *study.originals.values(),
        *(path for files in study.results.values() for path in files.values()),
    ]
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise StudyError(f"{len(missing)} files of the study are gone: {', '.join(missing)}")
    for path in files:  # headers only; a broken file would fail for one method only
        check_image(path)
