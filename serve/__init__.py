"""The HTTP side of batchsim (serve extra): `batchsim serve`, an OpenAI-compatible server over
the real engine and a policy, and `batchsim bench`, its load client. Nothing on the simulator
side imports this package."""
