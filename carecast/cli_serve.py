"""``carecast serve``: the engagement endpoint (unsubscribe, tracked clicks, open pixel) on uvicorn.

Unsubscribe tokens travel in the URL path, so uvicorn's access log is off: a logged path would keep
a link that unsubscribes a patient. Server errors are still logged (messages never carry a token).
Put it behind a TLS-terminating proxy that maps each stream's unsubscribe URL (``.../u``) and
tracking URL (``.../e``, whose ``/c`` and ``/o`` paths are the clicks and opens) here, and keep that
proxy's access log off or path-free too.
"""

from __future__ import annotations

import argparse

from carecast.home import CarecastHome


def command_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from carecast.crypto.kms import LocalKms
    from carecast.engagement.app import build_app, endpoint_campaigns
    from carecast.project import load_project

    home = CarecastHome.from_env(args.home).ensure()
    app = build_app(home, LocalKms(home.keys), campaigns=endpoint_campaigns(load_project()))
    print(
        f"carecast serve: engagement endpoint on http://{args.host}:{args.port} "
        "(/u/<token> unsubscribe, /c/<token> clicks, /o/<token> opens; access log off)"
    )
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="warning", server_header=False)
    return 0


def add_serve_command(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="run the engagement endpoint: unsubscribe, tracked clicks, open pixel")
    serve.add_argument("--home", help="data home (default: $CARECAST_HOME or ./.carecast)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    serve.set_defaults(handler=command_serve)
