# One or more prebuilt binaries on the project's Debian base: the cluster add-ons of the
# local cluster (Prometheus, its operator and config reloader, KEDA), built from Go modules
# on the host by devcluster (no network inside the build).
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
ARG ENTRYPOINT
# /usr/bin: with Debian's merged /usr, /bin/<name> (where the upstream images keep them and
# where the Prometheus operator's pod specs call them) is the same file.
COPY bin/ /usr/bin/
RUN test -x "/usr/bin/${ENTRYPOINT}" && ln -s "/usr/bin/${ENTRYPOINT}" /entrypoint
USER 65534:65534
ENTRYPOINT ["/entrypoint"]
