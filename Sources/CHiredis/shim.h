#ifndef SCOREBOARD_CHIREDIS_SHIM_H
#define SCOREBOARD_CHIREDIS_SHIM_H
#include <hiredis/hiredis.h>
#include <poll.h>
#endif
