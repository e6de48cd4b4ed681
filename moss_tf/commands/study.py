"""Command line of the user study: ``serve`` the voting page, print the ``results``.

::

    python -m moss_tf.study serve --originals real/ --method moss=out/moss \\
        --method jorder=out/jorder --db votes.sqlite [--host 127.0.0.1] [--port 8765] \\
        [--groups-per-visit 10] [--seed 0] [--visits-per-client 1] [--trust-proxy]
    python -m moss_tf.study serve --db votes.sqlite        # resume the stored study
    python -m moss_tf.study results --db votes.sqlite [--csv FILE] [--json FILE] [--plots DIR] \\
        [--visits-per-client N]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from moss_tf.errors import MossError
from moss_tf.study.app import HOST, create_app, make_study_server
from moss_tf.study.store import VoteStore
from moss_tf.study.study import StudyError, build_study, parse_method_arg


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; returns the exit status (2 with a one-line message on user errors)."""
    args = _parser().parse_args(argv)
    try:
        args.run(args)
    except MossError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _serve(args: argparse.Namespace) -> None:
    if not 1 <= args.port <= 65535:
        raise StudyError(f"--port must be in 1..65535, got {args.port}")
    if (args.originals is None) != (not args.method):
        raise StudyError(
            "give both --originals and --method NAME=DIR (at least two), or neither to resume "
            "the study stored in --db"
        )
    if args.originals is None:
        study = VoteStore(args.db, create=False).load_study()
    else:
        study = build_study(args.originals, [parse_method_arg(text) for text in args.method])
    app = create_app(
        args.db,
        study,
        groups_per_visit=args.groups_per_visit,
        seed=args.seed,
        visits_per_client=args.visits_per_client,
        trust_proxy=args.trust_proxy,
    )
    server = make_study_server(app, args.port, host=args.host)
    print(
        f"User study of {len(study.images)} images x {len(study.methods)} methods "
        f"({', '.join(study.methods)}); votes go to {args.db}\n"
        f"Open {_url(args.host, server.server_port)} (Ctrl+C stops; votes are kept)",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _url(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::", ""):
        return f"http://<this machine's address>:{port}/ from any network interface"
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _results(args: argparse.Namespace) -> None:
    if args.visits_per_client is not None and args.visits_per_client < 1:
        raise StudyError(f"--visits-per-client must be at least 1, got {args.visits_per_client}")
    results = VoteStore(args.db, create=False).results(args.visits_per_client)
    print(results.format_table())
    if args.csv:
        results.write_csv(args.csv)
        print(f"wrote {args.csv}")
    if args.json:
        results.write_json(args.json)
        print(f"wrote {args.json}")
    if args.plots:
        from moss_tf.study.plots import write_plots  # matplotlib only when plotting

        for path in write_plots(results, args.plots):
            print(f"wrote {path}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="User study of deraining methods on real rainy photos (docs/method.md §5).",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="serve the anonymous voting page")
    serve.add_argument("--originals", help="folder of the rainy originals")
    serve.add_argument(
        "--method",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a method and its result folder (same file stems as the originals); repeat",
    )
    serve.add_argument("--db", required=True, help="SQLite vote database (created if missing)")
    serve.add_argument(
        "--host",
        default=HOST,
        help=f"address to listen on ({HOST}: this machine or a reverse proxy on it; "
        "0.0.0.0: every network interface)",
    )
    serve.add_argument("--port", type=int, default=8765, help="port to listen on (8765)")
    serve.add_argument(
        "--visits-per-client",
        type=int,
        default=1,
        help="visits one client address may start (1; raise it for participants sharing an "
        "address)",
    )
    serve.add_argument(
        "--trust-proxy",
        action="store_true",
        help="take the client address from X-Forwarded-For, set by one reverse proxy in front "
        "(only behind such a proxy: anyone can send that header)",
    )
    serve.add_argument(
        "--groups-per-visit", type=int, default=10, help="groups each evaluator sees (10)"
    )
    serve.add_argument("--seed", type=int, help="make the random draws repeatable")
    serve.set_defaults(run=_serve)

    results = commands.add_parser(
        "results", help="print selection percentage and rank-n scores; write CSV/JSON/plots"
    )
    results.add_argument("--db", required=True, help="SQLite vote database written by serve")
    results.add_argument("--csv", help="write one row per method here")
    results.add_argument("--json", help="write scores and per-image votes here")
    results.add_argument("--plots", help="write selection.png, rank_n.png, per_image.png here")
    results.add_argument(
        "--visits-per-client",
        type=int,
        help="count at most this many visits of one client (default: serve's last cap)",
    )
    results.set_defaults(run=_results)
    return parser


if __name__ == "__main__":
    sys.exit(main())
