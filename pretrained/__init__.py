"""Zoo manifests (JSON facts about published BadNets); installed as ``kerasbd._pretrained``. See kerasbd.zoo."""
