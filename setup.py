from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="s3prl-speechprompt",
    version="0.1.0",
    description="SpeechPrompt (prompt tuning a frozen GSLM unit LM) as an s3prl / SUPERB downstream plugin",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    # the task configs live at the top level (downstream_configs/) and ship as s3prl_speechprompt.downstream_configs
    packages=find_packages(include=["s3prl_speechprompt", "s3prl_speechprompt.*"])
    + ["s3prl_speechprompt.downstream_configs"],
    package_dir={"s3prl_speechprompt.downstream_configs": "downstream_configs"},
    package_data={"s3prl_speechprompt.downstream_configs": ["*.yaml"]},
    install_requires=[
        "s3prl==0.4.18",
        "torch>=2.1",
        "torchaudio>=2.1",
        "pyyaml>=5.4",
        "editdistance",
        "tensorboardX",
        "soundfile",
        "scikit-learn",
        "scipy",                   # (already required by scikit-learn) report: Wilson interval, exact McNemar
        "joblib",
        "omegaconf>=2.1.1",
        "transformers<5",          # transformers 5 needs huggingface_hub>=1, which breaks s3prl's runner
        "huggingface_hub<1",       # s3prl 0.4.18 imports HfFolder / Repository (removed in 1.0)
        "tqdm",
        "matplotlib",
        "librosa",                 # imported by s3prl.dataio.corpus (SUPERB's corpus parsers)
        "pandas",                  # s3prl's Fluent Speech Commands / SNIPS corpus readers
        "espeakng-loader",         # pure-pip TTS for the synthetic corpora
    ],
    extras_require={
        # fairseq is only a test oracle; install it after torch with --no-build-isolation (see .ci/run)
        # pytest-xdist: CI runs test files on both cores (most runner tests are single-threaded subprocesses)
        "test": ["pytest", "pytest-timeout", "pytest-xdist", "peft"],   # peft: the prefix-tuning peer in benchmarks/efficiency.py
    },
    entry_points={
        "console_scripts": [
            "speechprompt=s3prl_speechprompt.cli:main",
            "speechprompt-run-downstream=s3prl_speechprompt.s3prl_plugin.run_downstream:main",
        ],
    },
)
