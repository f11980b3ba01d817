/* gcomp_strerror and gcomp_err_name, generated from GCOMP_ERRNO_MAP. */
#include "gcomp.h"

const char *gcomp_strerror(int status)
{
    switch (status) {
#define GCOMP_X_MSG(name, code, msg) \
    case code:                       \
        return msg;
        GCOMP_ERRNO_MAP(GCOMP_X_MSG)
#undef GCOMP_X_MSG
    }
    return "unknown error";
}

const char *gcomp_err_name(int status)
{
    switch (status) {
#define GCOMP_X_NAME(name, code, msg) \
    case code:                        \
        return "GCOMP_" #name;
        GCOMP_ERRNO_MAP(GCOMP_X_NAME)
#undef GCOMP_X_NAME
    }
    return "GCOMP_UNKNOWN";
}
