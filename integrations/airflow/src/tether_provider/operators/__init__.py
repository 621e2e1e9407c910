from tether_provider.operators.tether import TetherOperator

__all__ = ["TetherOperator"]
