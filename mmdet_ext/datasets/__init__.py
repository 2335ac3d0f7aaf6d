from .oid_dataset import OIDInstanceDataset

__all__ = ['OIDInstanceDataset']
