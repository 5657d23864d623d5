"""Old-photo restoration: scratches and dust, noise, faces and colour; see ``restore.py``."""

from restora.pipeline.photo.restore import RestoreResult, restore_photo

__all__ = ["RestoreResult", "restore_photo"]
