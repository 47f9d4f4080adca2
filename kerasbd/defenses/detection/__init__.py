"""Input detectors: flag triggered inputs at inference time, and what they share (batched softmax, serving)."""
