# One image for every conductor binary, built FROM scratch from the static
# binaries of `make build` (CGO_ENABLED=0). `make docker` builds it.
FROM scratch
COPY bin/conductord bin/workerd bin/conductorctl bin/squares-worker bin/noop-worker /bin/
ENTRYPOINT ["/bin/conductord"]
CMD ["--data", "/data", "--nats", "0.0.0.0:4222", "--http", "0.0.0.0:7070"]
