"""Students: transfer-set sampling, KD losses, student models, distillation, finetuning, sweeps."""
