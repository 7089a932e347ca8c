"""The Hugging Face dataset repo a release is pushed to; the token is read from ``HF_TOKEN`` when the push runs."""

import dagster as dg
from pydantic import Field

from laion_assets.release.publishing import clean_token

TOKEN_VARIABLE = "HF_TOKEN"


class HfResource(dg.ConfigurableResource):
    """Target repo, token and endpoint of ``hf_release``; ``dry_run`` only lists what would be committed.

    Leave ``token`` unset: the push reads ``HF_TOKEN`` from the environment at run time, so launch-time config
    (``--config-json``, the launchpad) that sets only ``repo_id`` keeps the token, and the token never enters the
    run's stored config. ``{"env": "OTHER_VARIABLE"}`` names another variable; a literal token would be stored in
    the run database, so never put one here. Surrounding whitespace (the newline of a secret mounted from a file) is
    stripped.
    """

    repo_id: str = Field(default="", description="dataset repo to push to, ORG/NAME")
    token: str | None = Field(
        default=None,
        description='leave unset to read HF_TOKEN at run time, or {"env": "VARIABLE"}; never a literal token',
    )
    endpoint: str | None = Field(default=None, description="Hub URL (default https://huggingface.co)")
    private: bool = Field(default=True, description="create the repo private")
    dry_run: bool = Field(default=False, description="only list what would be committed")

    def resolved_token(self) -> str | None:
        """The token to push with, stripped: ``token`` when set, else ``HF_TOKEN`` read now (None when neither is).

        A token with whitespace, control or non-ASCII characters inside is refused (``clean_token``) without being
        shown.
        """
        return clean_token(self.token, "hf.token") or clean_token(dg.EnvVar(TOKEN_VARIABLE).get_value(), TOKEN_VARIABLE)
