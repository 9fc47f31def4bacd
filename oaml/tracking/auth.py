"""MLflow basic-auth users for the platform: created or re-keyed by the admin, idempotently.

The tracking server runs with `--app-name basic-auth` and `default_permission = READ`
(k8s/base/mlflow.yaml): every user reads, only a resource's creator (or one granted EDIT) writes.
So the pipeline's user owns the experiments and registered models it creates, and the detector's
user, which creates nothing, can read the champion's artifacts but never move an alias.
Credentials are read from the environment (Kubernetes Secrets), never from arguments.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


class AuthSetupError(RuntimeError):
    """A user could not be read from the environment or set up on the server."""


@dataclass(frozen=True)
class UserCredential:
    username: str
    password: str


def credential_from_env(prefix: str, environ: dict[str, str] | None = None) -> UserCredential:
    """`<prefix>_USERNAME` and `<prefix>_PASSWORD` from the environment, both required."""
    environ = os.environ if environ is None else environ
    names = (f"{prefix}_USERNAME", f"{prefix}_PASSWORD")
    missing = [name for name in names if not environ.get(name)]
    if missing:
        raise AuthSetupError(f"set {' and '.join(missing)} (e.g. from a Kubernetes Secret)")
    return UserCredential(environ[names[0]], environ[names[1]])


def ensure_users(tracking_uri: str, users: list[UserCredential]) -> dict[str, str]:
    """Create each user, or set its password if it exists; returns username -> what was done.

    Runs as the admin whose credentials are MLFLOW_TRACKING_USERNAME/PASSWORD. Never makes a
    user an admin; an existing admin is refused (its password is the admin Secret's business).
    """
    from mlflow.exceptions import RestException
    from mlflow.server import get_app_client

    client = get_app_client("basic-auth", tracking_uri=tracking_uri)
    done = {}
    for user in users:
        try:
            existing = client.get_user(user.username)
        except RestException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise AuthSetupError(f"reading user {user.username!r}: {exc.message}") from None
            existing = None
        try:
            if existing is None:
                client.create_user(user.username, user.password)
                done[user.username] = "created"
            elif existing.is_admin:
                raise AuthSetupError(
                    f"{user.username!r} is an MLflow admin; give the pipeline and the detector "
                    "users of their own"
                )
            else:
                client.update_user_password(user.username, user.password)
                done[user.username] = "password set"
        except RestException as exc:
            raise AuthSetupError(f"setting up user {user.username!r}: {exc.message}") from None
    return done


def grant_promoter(tracking_uri: str, username: str, models: list[str]) -> str:
    """Create the experiment of promotion records (as the admin, so the pipeline's user cannot
    own it) and give `username` EDIT on it, and on each registered model in `models` (existing
    or not yet created by the pipeline), whose alias it moves: only the promoter writes what
    the gate and the detector's pin trust. Returns the experiment's id."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    from oaml.tracking.promotions import experiment_id

    try:
        experiment = experiment_id(mlflow.MlflowClient(tracking_uri), create=True)
        auth = get_app_client("basic-auth", tracking_uri=tracking_uri)
        auth.grant_user_permission(username, "experiment", experiment, "EDIT")
        for model in models:
            auth.grant_user_permission(username, "registered_model", model, "EDIT")
    except MlflowException as exc:
        raise AuthSetupError(
            f"granting {username!r} the promotion records: {exc.message}"
        ) from None
    return experiment
