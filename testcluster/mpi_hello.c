/* MPI hello for the test clusters: each rank prints "rank R of N on HOST" and rank 0 checks an
 * allreduce. Used by smoke.sh; compile with $TESTCLUSTER_MPICC (trixie: inside the chroot). */
#include <mpi.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv) {
  int rank = -1, size = -1, len = 0, sum = 0;
  char host[MPI_MAX_PROCESSOR_NAME];
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Get_processor_name(host, &len);
  MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  printf("rank %d of %d on %s pid %d sum %d\n", rank, size, host, (int)getpid(), sum);
  fflush(stdout);
  MPI_Finalize();
  return sum == size * (size - 1) / 2 ? 0 : 1;
}
