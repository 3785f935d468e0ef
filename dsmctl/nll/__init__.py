"""NLL estimators of a trained model (one-shot, dequantized, PF-ODE), their constant, request and report."""
