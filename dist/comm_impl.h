/* Private to dist/: constructors the implementations share. */
#ifndef NAC_DIST_COMM_IMPL_H
#define NAC_DIST_COMM_IMPL_H

#include "dist/comm.h"

/* A communicator around iface and ctx (the table's free releases ctx). */
nac_status nac_comm_new(const nac_comm_i *iface, void *ctx, int rank, int size, nac_comm_t **out);
/* MPI_COMM_WORLD (dist/mpi.c, where built with MPI). */
nac_status nac_comm_mpi_world(nac_comm_t **out);

#endif
