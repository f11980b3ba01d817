/*
 * control_mpi.h: for the MPI data transport only: the control plane's communicator,
 * which it duplicates for its own lanes (so data and control never share tags).
 */
#ifndef GCD_CONTROL_MPI_H
#define GCD_CONTROL_MPI_H

#include <mpi.h>

#include "control.h"

MPI_Comm gcd_ctl_comm(const gcd_ctl *c);

#endif
