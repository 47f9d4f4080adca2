"""Input purification: defenses that wrap the model with an inference-time input transform."""
