"""``medfusion serve``: the web service and its page (thin wrapper over :func:`medfusion.serve.create_app`).

Registered on the main app in :mod:`medfusion.cli`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console

console = Console()


def serve(
    model: Path | None = typer.Option(None, help="classification run folder for /predict (medfusion train)"),
    index: str | None = typer.Option(None, help="index folder or postgresql:// URL for /search"),
    search_model: Path | None = typer.Option(None, help="the joint-embedding run that built --index"),
    report_model: Path | None = typer.Option(None, help="report-generator run folder for /report"),
    host: str = typer.Option("127.0.0.1", help="interface to listen on (0.0.0.0: every interface)"),
    port: int = typer.Option(8000, min=1, max=65535, help="TCP port"),
    token: str | None = typer.Option(None, envvar="MEDFUSION_TOKEN", show_default=False,
                                     help="bearer token required by every data route [env MEDFUSION_TOKEN]"),
    max_upload_mb: int = typer.Option(20, min=1, help="largest request body in MiB"),
    onnx: Path | None = typer.Option(None, help="ONNX export of --model (medfusion export) run by ONNX Runtime"),
) -> None:
    """Serve triage prediction, search and report generation over HTTP, with a web page at /."""
    import uvicorn

    from medfusion.serve import create_app

    if model is None and index is None and report_model is None:
        console.print("[red]error:[/red] expected at least one of --model, --index (with --search-model) "
                      "or --report-model; received none")
        raise typer.Exit(2)
    try:
        app = create_app(model, index, search_model, report_model, token, max_upload_mb * 1024 * 1024, onnx)
    except ValueError as error:
        console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if host not in ("127.0.0.1", "localhost", "::1") and token is None:
        console.print("[yellow]warning:[/yellow] listening beyond this machine without --token: "
                      "anyone who can reach the port can use the models")
    # uvicorn's access log prints request paths and query strings (search text, ids): off; the service logs
    # route templates only
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="info")
