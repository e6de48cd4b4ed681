"""The network: layers (:mod:`.layers`), MOSSNet (:mod:`.network`), the losses (:mod:`.losses`).

Pure Keras: nothing here knows about training, data files or commands.
:mod:`.convert` loads the authors' released PyTorch weights into MOSSNet;
:mod:`.defaults` reads MOSSNet's defaults without importing TensorFlow.
"""
