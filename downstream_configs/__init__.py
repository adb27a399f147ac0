"""SUPERB-style s3prl configs, one YAML per task x method (installed as s3prl_speechprompt.downstream_configs)."""
