"""The voting page of a user study (docs/method.md §5), a Flask app over a :class:`VoteStore`.

A visit is one evaluator: the start button draws ``groups_per_visit`` distinct
random images and, per image, a random order of the methods; the visit is
stored under a random token carried in the URL (no cookie, nothing personal).
Each group page shows the rainy original as the fixed reference and the
results under neutral labels A, B, C, ...; image URLs hold only the token,
the group position and the label, never a method name or folder. Plain HTML
forms: no JavaScript needed.

Pages::

    GET  /                              explanation and a start button
    POST /start                         new visit -> first group
    GET  /v/<token>/<position>          a group (position 0-based)
    POST /v/<token>/<position>          the vote (form field choice = label) -> next group
    GET  /v/<token>/<position>/reference          the rainy original
    GET  /v/<token>/<position>/result/<label>     a result
    GET  /v/<token>/done                thank-you page

Example::

    app = create_app("votes.sqlite", build_study("originals", {"a": "out/a", "b": "out/b"}))
    make_study_server(app, port=8765).serve_forever()
"""

from __future__ import annotations

import mimetypes
import random
import string
import threading
from collections.abc import Sequence
from pathlib import Path

from flask import Flask, Response, abort, redirect, render_template, request, url_for
from werkzeug.serving import BaseWSGIServer, make_server

from moss_tf.study.store import Group, VoteStore
from moss_tf.study.study import Study, StudyError

__all__ = ["create_app", "draw_visit", "make_study_server"]

HOST = "127.0.0.1"
LABELS = string.ascii_uppercase


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

    Raises:
        StudyError: bad arguments, another study in the database, more than 26
            methods, or a file of the study has disappeared.
    """
    if groups_per_visit < 1:
        raise StudyError(f"--groups-per-visit must be at least 1, got {groups_per_visit}")
    store = VoteStore(db_path)
    if study is None:
        study = store.load_study()
    else:
        store.save_study(study)
    if len(study.methods) > len(LABELS):
        raise StudyError(f"at most {len(LABELS)} methods fit the page, got {len(study.methods)}")
    _check_files(study)

    app = Flask(__name__)
    new_visit_lock = threading.Lock()

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

    @app.get("/")
    def index() -> str:
        return render_template("index.html", groups=min(groups_per_visit, len(study.images)))

    @app.post("/start")
    def start() -> Response:
        # The lock keeps visit numbers (and so seeded draws) distinct under threads.
        with new_visit_lock:
            number = store.visit_count() + 1
            rng = random.Random(None if seed is None else f"{seed}:{number}")
            token = store.add_visit(draw_visit(study, groups_per_visit, rng))
        return redirect(url_for("group", token=token, position=0), code=303)

    @app.route("/v/<token>/<int:position>", methods=["GET", "POST"])
    def group(token: str, position: int) -> Response | str | tuple[str, int]:
        groups = visit(token)
        if position >= len(groups):
            return redirect(url_for("done", token=token))
        current = groups[position]
        labels = _labels(current)
        if request.method == "POST":
            label = request.form.get("choice", "")
            if label not in labels:
                page = render_group(token, current, len(groups), "Please pick one result.")
                return page, 400
            store.vote(token, position, current.shown_order[labels.index(label)])
            if position + 1 == len(groups):
                return redirect(url_for("done", token=token), code=303)
            return redirect(url_for("group", token=token, position=position + 1), code=303)
        return render_group(token, current, len(groups))

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
        return _image_response(study.original(group_at(token, position).image))

    @app.get("/v/<token>/<int:position>/result/<label>")
    def result(token: str, position: int, label: str) -> Response:
        current = group_at(token, position)
        labels = _labels(current)
        if label not in labels:
            abort(404)
        method = current.shown_order[labels.index(label)]
        return _image_response(study.result(method, current.image))

    @app.get("/v/<token>/done")
    def done(token: str) -> str:
        votes = sum(group.choice is not None for group in visit(token))
        return render_template("done.html", votes=votes)

    return app


def make_study_server(app: Flask, port: int = 8765) -> BaseWSGIServer:
    """A threaded HTTP server for ``app`` bound to 127.0.0.1 only.

    Args:
        app: from :func:`create_app`.
        port: 1..65535, or 0 for any free port (read it back from ``server_port``).

    Raises:
        StudyError: port out of range or already in use.
    """
    if not 0 <= port <= 65535:
        raise StudyError(f"--port must be in 1..65535, got {port}")
    try:
        return make_server(HOST, port, app, threaded=True)
    except (OSError, SystemExit) as error:
        # werkzeug reports a busy port on stderr and exits; say it as a StudyError.
        raise StudyError(f"cannot listen on {HOST}:{port}; is the port in use?") from error


def _labels(group: Group) -> list[str]:
    """The neutral labels A, B, ... of a group's results, in the order shown."""
    return list(LABELS[: len(group.shown_order)])


def _image_response(path: Path) -> Response:
    # Only the bytes go out: no file name, modification time or ETag derived
    # from the path, which could tell an evaluator which method made the image.
    response = Response(path.read_bytes(), mimetype=mimetypes.guess_type(path.name)[0])
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
