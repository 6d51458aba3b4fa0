"""The hybrid restorer: damage analysis, parameter predictor, U-Net, decision engine, CLI."""
