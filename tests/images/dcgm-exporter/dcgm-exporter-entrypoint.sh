#!/bin/sh
# Stand-in of the real image's entrypoint script (which first checks the
# capabilities that profiling fields need): starts the exporter with the
# container's arguments, as the container's main process.
exec dcgm-exporter "$@"
