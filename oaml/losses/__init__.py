"""Loss terms of the OAML method: distillation, mutual-information bounds, energy margins."""
