"""Training: the loop (setup, then epochs), one step, losses, augmentation, checkpoints, stopping
on request, data-parallel processes."""
