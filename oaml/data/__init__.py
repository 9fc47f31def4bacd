"""Data: OpenOOD imglists, benchmark definitions, the offline Fashion-MNIST benchmark."""
