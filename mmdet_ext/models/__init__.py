from .oid_cascade_roi_head import OIDCascadeRoIHead

__all__ = ['OIDCascadeRoIHead']
