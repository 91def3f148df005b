"""The scaling API: the checker's documents, the deployment configs and the transitions
over HTTP behind JWT, and a status page (`sikka-scaling serve`)."""
