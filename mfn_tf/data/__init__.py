"""Datasets in insightface's formats, without MXNet.

- `recordio`: MXNet RecordIO `.rec`/`.idx` and `IRHeader` records.
- `insightface_dataset`: a training-set folder (`train.rec`, `train.idx`,
  `property`), opened and checked.
- `image_folders`: one folder of images per identity.
- `pipeline`: the `tf.data` training pipeline over either source.
- `verification_bin`: verification pairs (`lfw.bin` and the like).
- `lfw`, `packing`: `pairs.txt` and packing images into both formats.
- `synthetic`: the generated demo dataset.
- `inspection`: summaries and contact sheets.

Every check raises `errors.DatasetError`.
"""
