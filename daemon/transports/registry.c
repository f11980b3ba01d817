/* registry.c: every transport gcompd can use, in one array (the first is the default). */
#include <string.h>

#include "transport.h"

extern const gcd_transport_ops gcd_transport_mpi;

const gcd_transport_ops *const gcd_transports[] = {
    &gcd_transport_mpi,
};

const int gcd_ntransports = sizeof(gcd_transports) / sizeof(gcd_transports[0]);

const gcd_transport_ops *gcd_transport_find(const char *name)
{
    for (int i = 0; i < gcd_ntransports; i++)
        if (strcmp(gcd_transports[i]->name, name) == 0)
            return gcd_transports[i];
    return NULL;
}
