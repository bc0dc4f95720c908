# One static binary alone on an empty root: the cluster's CoreDNS and metrics-server, built
# from Go modules on the host by devcluster (CGO_ENABLED=0). No shell, no libraries, no user
# database: the pods run it as 65534 with a read-only root filesystem.
FROM scratch
ARG ENTRYPOINT
COPY bin/${ENTRYPOINT} /entrypoint
USER 65534:65534
ENTRYPOINT ["/entrypoint"]
