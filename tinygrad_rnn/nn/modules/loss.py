"""``torch.nn.modules.loss``'s path for the loss modules."""
from ..loss import CrossEntropyLoss, MSELoss, NLLLoss

__all__ = ["CrossEntropyLoss", "NLLLoss", "MSELoss"]
