"""Reading a training script without running it: source -> facts -> what the training does -> settings."""
