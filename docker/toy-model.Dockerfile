# The runtime image with the offline toy model baked in under /models: base/ and bem/, the image
# that manifests/samples/image-model.yaml names, plus checkpoints/alpha, beta and gamma (more
# checkpoints of the same base, for BEMCheckpoint) and foreign/bem (one for another base, which
# the runtime refuses with 422 naming a tensor and both shapes). No download: the runtime
# generates them itself (about 0.4 MB beside the base).
#   docker build -f docker/toy-model.Dockerfile --build-arg RUNTIME_IMAGE=bem-runtime:0.1.0 \
#     -t bem-runtime-with-model:0.1.0 .
ARG RUNTIME_IMAGE=bem-runtime:0.1.0
FROM ${RUNTIME_IMAGE}
USER 0:0
RUN bem-runtime make-toy --out /models --variants alpha beta gamma --foreign \
    && chmod -R a+rX,go-w /models
USER 10001:10001
