"""Unit-level engine: pretrain a unit LM, train (PT / FT-LM / unit BLSTM) and evaluate from unit files.

Everything here works on precomputed units (SpeechPrompt's ``units <s> label`` files or our TSV
manifests), so no speech upstream runs per step.
"""
