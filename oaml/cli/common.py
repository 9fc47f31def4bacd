"""The `oaml` command's shared parts: the Typer apps, friendly errors, common options.

Heavy libraries (torch, timm, sklearn) are imported inside each command, so `oaml --help` is fast.
Expected failures (bad input, missing files) print one line naming the problem and exit 2;
set OAML_DEBUG=1 to see the full traceback instead.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="OOD-aware image classifiers with Outlier Aware Metric Learning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Benchmark data.", no_args_is_help=True)
app.add_typer(data_app, name="data")
bench_app = typer.Typer(
    help="Benchmarks, each against its baseline in one run.", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")
registry_app = typer.Typer(
    help="The MLflow model registry: promote, copy, list, history.", no_args_is_help=True
)
app.add_typer(registry_app, name="registry")


def _user_errors() -> tuple[type[BaseException], ...]:
    from oaml.config import ConfigError
    from oaml.data.imglist import ImglistError
    from oaml.serving.detector import DetectorError
    from oaml.tracking.auth import AuthSetupError
    from oaml.tracking.registry import PromotionError

    own: tuple[type[BaseException], ...] = (
        ConfigError,
        ImglistError,
        DetectorError,
        PromotionError,
        AuthSetupError,
    )
    try:  # torch-free images (the serving one) have no checkpoints to complain about
        from oaml.models.checkpoint import CheckpointError

        own = (*own, CheckpointError)
    except ImportError:
        pass
    return (
        *own,
        ValueError,
        KeyError,
        OSError,  # missing files, permissions, a folder where a file was expected
        FloatingPointError,  # a diverging loss (the message says what to change)
    )


def friendly(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn expected errors into a one-line message and exit code 2 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if os.environ.get("OAML_DEBUG"):
            return func(*args, **kwargs)  # full tracebacks for debugging
        try:
            return func(*args, **kwargs)
        except _user_errors() as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(2) from None

    return wrapper


OverridesOption = Annotated[
    list[str] | None, typer.Option("--set", help="Override a preset key: a.b.c=value")
]

DeviceOption = Annotated[str, typer.Option(help="auto, cpu, cuda ...")]


TrackingOption = Annotated[
    str | None,
    typer.Option(help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else runs/mlflow)"),
]


# The names come from the method registry, which imports torch: `oaml methods` lists them.
StudentMethodOption = Annotated[
    str, typer.Option(help="Student method (`oaml methods` lists them)")
]


def _check_method(method: str) -> None:
    """Refuse a --method that is not a registered student method, naming those that are."""
    from oaml.recipe import student_methods

    known = student_methods()
    if method not in known:
        raise ValueError(f"--method must be one of {', '.join(known)}; got {method!r}")
