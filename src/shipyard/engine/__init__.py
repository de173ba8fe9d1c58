"""The deployment state machine and the runner that executes a Plan."""
