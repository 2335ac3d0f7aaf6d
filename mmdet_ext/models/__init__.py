from .federated_loss import FederatedSigmoidLoss
from .federated_roi_head import FederatedCascadeRoIHead
from .ignore_assigner import IgnoringMaxIoUAssigner
from .oid_cascade_roi_head import OIDCascadeRoIHead

__all__ = ['FederatedCascadeRoIHead', 'FederatedSigmoidLoss', 'IgnoringMaxIoUAssigner', 'OIDCascadeRoIHead']
