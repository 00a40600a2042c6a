"""Ray jobs over the core library: bulk archive restoration and data-parallel training.

* ``python -m napari_jpeg_restore.distributed.restore_archive --src URL --dst URL`` restores
  every JPEG under a prefix (local, ``s3://``, ``gs://``) with Ray Data batch inference (a pool
  of model actors); resumable, with a JSON Lines manifest in the destination.
* ``python -m napari_jpeg_restore.distributed.train STAGE --data URL --storage URL`` runs
  ``jpeg-restore train``'s loop on every worker of Ray Train's ``TorchTrainer`` (DDP; gloo on
  CPU, NCCL on GPU).

Both are thin shells over :mod:`napari_jpeg_restore.core`; ``ray`` is imported lazily so this
package imports without the ``ray`` extra.
"""
