from tether_provider.triggers.tether import TetherTrigger

__all__ = ["TetherTrigger"]
