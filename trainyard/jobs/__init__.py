"""One job from submission to model: where its files live in storage (`layout`), its record
(`records`), its code snapshot (`code`), its learner attempts judged and recorded
(`attempts`), checkpoints (`checkpoints`), lineage (`lineage`), evaluation (`evaluation`), the
committed model (`model`) and the model registry (`registry`). It may import `manifest`,
`storage` and `failures` (`attempts` also the backends' report of the learners' ends,
`backends.base`); `layout` only `storage`, since the manifest builds on it. The learner
runtime uses `layout` and `checkpoints`, so those stay free of pydantic-heavy neighbours.
"""
