"""`oaml registry`: promote, copy, list and trace registered detectors in MLflow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from oaml.cli.common import (
    TrackingOption,
    friendly,
    registry_app,
)


@registry_app.command("promote")
@friendly
def registry_promote(
    name: Annotated[str, typer.Argument(help="Registered model name")],
    auroc_tolerance: Annotated[
        float, typer.Option(help="Near/far AUROC may be at most this much lower")
    ] = 0.0,
    fpr95_tolerance: Annotated[
        float, typer.Option(help="Near/far FPR95 may be at most this much higher")
    ] = 0.01,
    max_accuracy_drop: Annotated[
        float, typer.Option(help="ID accuracy may drop at most this much")
    ] = 0.005,
    force: Annotated[bool, typer.Option(help="Promote even if the gate fails")] = False,
    reason: Annotated[str, typer.Option(help="Why --force (recorded as a tag)")] = "",
    source: Annotated[str, typer.Option(help="Alias to promote")] = "challenger",
    target: Annotated[str, typer.Option(help="Alias to move")] = "champion",
    tracking_uri: TrackingOption = None,
) -> None:
    """Move `champion` to the `challenger` version if its metrics pass the gate; exit 2 naming
    the failing metrics otherwise."""
    from oaml.tracking import registry
    from oaml.tracking.store import resolve_tracking_uri

    gate = registry.Gate(auroc_tolerance, fpr95_tolerance, max_accuracy_drop)
    done = registry.promote(
        name, gate, force, reason, source, target, resolve_tracking_uri(tracking_uri)
    )
    was = f"(was version {done.previous})" if done.previous else "(first champion)"
    note = " FORCED past: " + "; ".join(done.gate.failures) if done.forced else ""
    typer.echo(f"{name} version {done.version} is now {target} {was}{note}")
    typer.echo(
        "Pin it in the detector's ConfigMap (k8s/base/kustomization.yaml, oaml-detector-model):"
    )
    typer.echo(f"  MODEL_URI=models:/{name}/{done.version}")
    typer.echo(f"  MODEL_SHA256={done.onnx_sha256}")
    if done.triton_sha256:
        typer.echo(f"  TRITON_SHA256={done.triton_sha256}")


@registry_app.command("copy")
@friendly
def registry_copy(
    name: Annotated[str, typer.Argument(help="Registered model to copy from (e.g. dev)")],
    to: Annotated[str, typer.Option(help="Registered model to copy into (e.g. prod)")],
    version: Annotated[str, typer.Option(help="Version number or alias")] = "champion",
    alias: Annotated[str, typer.Option(help="Alias to set on the copy")] = "challenger",
    tracking_uri: TrackingOption = None,
) -> None:
    """Copy a version (with its tags) to another registered model, e.g. dev -> prod."""
    import mlflow

    from oaml.tracking import registry
    from oaml.tracking.store import resolve_tracking_uri

    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    copied = registry.copy_version(name, version, to, alias)
    typer.echo(f"{name}@{version} -> {copied.name} version {copied.version} (alias {alias})")


@registry_app.command("list")
@friendly
def registry_list(tracking_uri: TrackingOption = None) -> None:
    """Registered models, their aliases and newest version."""
    import mlflow

    from oaml.tracking import registry
    from oaml.tracking.store import resolve_tracking_uri

    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    for row in registry.list_models():
        aliases = ", ".join(f"{a}={v}" for a, v in row["aliases"].items()) or "-"
        typer.echo(
            f"{row['name']:24s} versions {row['versions']:3d}  latest {row['latest']}  {aliases}"
        )


@registry_app.command("history")
@friendly
def registry_history(
    name: Annotated[str, typer.Argument(help="Registered model name")],
    tracking_uri: TrackingOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Every version of NAME, newest first: aliases, gated metrics, promotion records."""
    import mlflow

    from oaml.tracking import registry
    from oaml.tracking.store import resolve_tracking_uri

    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    rows = registry.history(name)
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    for row in rows:
        m = row["metrics"]
        numbers = " ".join(f"{k}={m[k]:.4f}" for k in sorted(m))
        promoted = row["promotion"].get("at", "")
        forced = (
            " forced: " + row["promotion"]["forced_reason"]
            if "forced_reason" in row["promotion"]
            else ""
        )
        typer.echo(
            f"v{row['version']:>3s} {row['created']} [{', '.join(row['aliases']) or '-'}] "
            f"{numbers}{' promoted ' + promoted if promoted else ''}{forced}"
        )


@registry_app.command("ensure-users")
@friendly
def registry_ensure_users(
    from_env: Annotated[
        list[str],
        typer.Option(help="PREFIX: a user from PREFIX_USERNAME and PREFIX_PASSWORD (repeatable)"),
    ],
    promoter: Annotated[
        str | None,
        typer.Option(help="PREFIX of the user who alone writes promotion records (promotes)"),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(help="Registered model whose alias the promoter moves (repeatable)"),
    ] = None,
    tracking_uri: TrackingOption = None,
) -> None:
    """Create MLflow basic-auth users (or reset their passwords), as the admin in
    MLFLOW_TRACKING_USERNAME/PASSWORD. Credentials come from the environment, never arguments."""
    from oaml.tracking.auth import credential_from_env, ensure_users, grant_promoter
    from oaml.tracking.store import resolve_tracking_uri

    users = [credential_from_env(prefix) for prefix in from_env]
    promoting = credential_from_env(promoter) if promoter else None
    users += [promoting] if promoting and promoting not in users else []
    uri = resolve_tracking_uri(tracking_uri)
    for username, what in ensure_users(uri, users).items():
        typer.echo(f"{username}: {what}")
    if promoting:
        experiment = grant_promoter(uri, promoting.username, model or [])
        typer.echo(
            f"{promoting.username}: writes promotion records (experiment {experiment}) and "
            f"promotes {', '.join(model or []) or 'no model yet (add --model NAME)'}"
        )


@registry_app.command("fetch-triton")
@friendly
def registry_fetch_triton(
    model: Annotated[str, typer.Argument(help="The pinned version: models:/NAME/VERSION")],
    out: Annotated[Path, typer.Option(help="Triton's model repository folder to fill")],
    sha256: Annotated[
        str,
        typer.Option(
            envvar="TRITON_SHA256", help="The repository's digest `oaml registry promote` printed"
        ),
    ],
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI (default: MLFLOW_TRACKING_URI)")
    ] = None,
) -> None:
    """Download a promoted version's Triton model repository and verify its digest before it
    lands in OUT (the Triton pods' init container, k8s/kserve-triton)."""
    from oaml.serving.model_source import fetch_triton_repository

    folder = fetch_triton_repository(model, out, sha256, tracking_uri)
    typer.echo(f"{model}: Triton repository verified and written to {folder}")
