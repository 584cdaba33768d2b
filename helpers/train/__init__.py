"""The fine-tuning wing (notebook 05): recipe, XTuner config, launch, checkpoints, logs, convert."""
