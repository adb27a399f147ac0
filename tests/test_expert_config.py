"""Both runner experts read ``downstream_expert`` the same way: unknown keys and missing required keys are named."""
import pytest

from s3prl_speechprompt.s3prl_plugin.baseline_expert import BaselineConfig
from s3prl_speechprompt.s3prl_plugin.prompt_expert import ExpertConfig


@pytest.mark.parametrize("cls, good", [(ExpertConfig, {"task": "ks", "ulm": "hubert100"}),
                                       (BaselineConfig, {"task": "ks", "head": "linear"})])
def test_expert_configs_name_unknown_and_missing_keys(cls, good):
    assert cls.from_dict(dict(good)).task == "ks"
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['promt'\]"):
        cls.from_dict({**good, "promt": {}})
    for key in good:
        if key != "head":
            with pytest.raises(ValueError, match=f"downstream_expert.{key} is required"):
                cls.from_dict({k: v for k, v in good.items() if k != key})
    if cls is BaselineConfig:
        with pytest.raises(ValueError, match="downstream_expert.head: expected one of"):
            cls.from_dict({**good, "head": "transformer"})
    else:
        with pytest.raises(ValueError, match="downstream_expert.precision"):
            cls.from_dict({**good, "precision": "fp8"})
