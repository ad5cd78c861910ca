"""One job from submission to model: where its files live in storage (`layout`), its record
(`records`), checkpoints (`checkpoints`), lineage (`lineage`), evaluation (`evaluation`), the
committed model (`model`) and the model registry (`registry`). It may import `manifest`,
`storage` and `failures`; `layout` only `storage`, since the manifest builds on it. The learner
runtime uses `layout` and `checkpoints`, so those stay free of pydantic-heavy neighbours.
"""
