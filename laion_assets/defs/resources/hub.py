"""The Hugging Face dataset repo a release is pushed to; the token comes from ``dg.EnvVar("HF_TOKEN")``."""

import dagster as dg


class HfResource(dg.ConfigurableResource):
    """Target repo, token and endpoint of ``hf_release``; ``dry_run`` only lists what would be committed."""

    repo_id: str = ""
    token: str | None = None
    endpoint: str | None = None
    private: bool = True
    dry_run: bool = False
