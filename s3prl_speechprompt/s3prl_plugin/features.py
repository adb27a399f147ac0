"""The runner's features, outside the runner: the same upstream + Featurizer, built from the runner's args.

s3prl never hands the upstream to a downstream expert, but the k-means must be fitted (and the training
split quantized, for the frequency verbalizer) on exactly the features the runner will feed later.
The expert receives every CLI arg as a keyword, so it rebuilds the pair once, uses it, and drops it.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from s3prl_speechprompt.errors import ConfigError


def runner_featurizer(kwargs: dict, featurizer_state: Optional[dict] = None) -> Callable:
    """``featurize(wav np.float32) -> (T, D) tensor`` matching ``-u/-k/-g/-s/-l/--upstream_feature_normalize``;
    ``featurizer_state``: a runner checkpoint's ``Featurizer`` entry (the trained layer weights, if any)."""
    from s3prl import hub
    from s3prl.upstream.interfaces import Featurizer

    name = kwargs.get("upstream")
    if not name or not hasattr(hub, name):
        raise ConfigError(f"-u {name!r} is not an s3prl upstream")
    device = kwargs.get("device") or "cpu"
    upstream = getattr(hub, name)(ckpt=kwargs.get("upstream_ckpt"), model_config=kwargs.get("upstream_model_config"),
                                  refresh=False).to(device).eval()
    featurizer = Featurizer(upstream, feature_selection=kwargs.get("upstream_feature_selection") or "hidden_states",
                            upstream_device=device, layer_selection=kwargs.get("upstream_layer_selection"),
                            normalize=bool(kwargs.get("upstream_feature_normalize"))).to(device).eval()
    if featurizer_state:
        featurizer.load_state_dict(featurizer_state)

    @torch.no_grad()
    def featurize(wav) -> torch.Tensor:
        w = [torch.as_tensor(wav, dtype=torch.float32, device=device)]
        return featurizer(w, upstream(w))[0]

    return featurize


def upstream_key(kwargs: dict) -> dict:
    """What identifies the features, for cache keys."""
    from s3prl_speechprompt.units.prepare import file_signature
    return {"upstream": kwargs.get("upstream"), "upstream_ckpt": file_signature(kwargs.get("upstream_ckpt")),
            "model_config": file_signature(kwargs.get("upstream_model_config")),
            "feature_selection": kwargs.get("upstream_feature_selection"),
            "layer": kwargs.get("upstream_layer_selection"),
            "normalize": bool(kwargs.get("upstream_feature_normalize"))}
