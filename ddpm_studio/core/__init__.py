"""PyTorch building blocks (no Qt): U-Net, schedules, diffusion math, samplers, EMA, data, checkpoints."""
