"""Registry-driven contract tests (timm style): every registered method, OOD score and
dataset must honour its protocol, on tiny deterministic fixtures."""
