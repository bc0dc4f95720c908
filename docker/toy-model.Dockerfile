# The runtime image with the offline toy model baked in under /models (base/ and bem/),
# the image that manifests/samples/image-model.yaml names. No download: the runtime
# generates the model itself.
#   docker build -f docker/toy-model.Dockerfile --build-arg RUNTIME_IMAGE=bem-runtime:0.1.0 \
#     -t bem-runtime-with-model:0.1.0 .
ARG RUNTIME_IMAGE=bem-runtime:0.1.0
FROM ${RUNTIME_IMAGE}
USER 0:0
RUN bem-runtime make-toy --out /models && chmod -R a+rX,go-w /models
USER 10001:10001
