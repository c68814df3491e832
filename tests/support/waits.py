"""How long a test waits for a process or an app script: only a hang, never a slow or loaded machine, runs past it."""

# a child that needs this long is stuck: on 2 cores shared by many jobs a CLI start alone took minutes
HANG_S = 3600
